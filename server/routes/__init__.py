"""The HTTP and WebSocket routes, one module per resource; ``create_app`` mounts their routers.

Routes translate: they validate the request (pydantic models), call the episode manager, the
task registry or the data loop, and shape the reply; the env logic lives elsewhere. Step and
judge actions all enter through ``_actions``, so every route caps and converts them alike.
"""
