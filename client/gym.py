def register_envs() -> None:
    pass
