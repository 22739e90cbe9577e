"""ToolGym on a Ray cluster: N replicas as Ray actors behind one entry point (``toolgym serve --ray``).

``placement`` starts the replicas (one ToolGym server per Ray actor, spread over the nodes);
``proxy`` is the entry point that spreads resets and routes every call on an episode to the
replica its id names; ``run`` ties both to the ``serve`` command. Ray is needed only here:
``pip install 'toolgym[fleet]'``. docs/deploy.md, "Fleet on Ray", says what runs where.
"""
