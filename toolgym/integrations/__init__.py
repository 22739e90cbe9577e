"""Adapters that plug ToolGym episodes into RL trainers: TRL, verl, SkyRL and verifiers.

Each adapter is a submodule that imports its trainer library, so it is installed through its own
extra (``pip install 'toolgym[trl]'``) and imported by name; this package imports none of them,
and the core package never imports this one. ``_shared`` holds what every adapter needs: a task's
tool schemas as typed callables, the Hermes/Qwen tools system prompt, tool-call parsing from raw
model text, and the environment variables that name the server.
"""
