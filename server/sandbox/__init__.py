"""Where untrusted code runs: the sandbox contract, its backends, the warm pool and the image.

``base`` is the contract the envs and the server rely on; ``docker`` (hardened containers) and
``process`` (local processes, not isolated) implement it, and ``select`` picks one at start-up.
Code reaches a sandbox only through its agent (``agent``), which ``agent_client`` drives.
"""
