"""The Flower backend (`engine.backend: flower`): step 3 of the round loop as Flower messages.

Nothing about scheduling, aggregation, deadlines or metrics lives here: the ServerApp builds the
project's own `Engine` with a `FlowerRunner` (runner.py) bound to Flower's Grid and calls `engine.run()`.
The runner ships each `ClientTask` (cid, rank, seed, deadline gate) and the global adapter truncated to the
client's rank as a Message (ArrayRecord + ConfigRecord) to the ClientApp (client_app.py), which calls the
project's `client.train_client` on a model kept resident in its worker process and replies with the rank-r
update and its telemetry. launch.py runs the app in Flower's simulation engine or on a SuperLink with
SuperNodes on this machine. Requires the `flower` extra: `pip install -e ".[flower]"`.
"""
