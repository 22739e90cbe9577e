"""Adapters that plug ToolGym episodes into RL trainers; each imports only with its trainer installed."""
