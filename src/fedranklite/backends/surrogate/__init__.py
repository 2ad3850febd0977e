"""The surrogate backend (`engine.backend: surrogate`): the real round loop with client training replaced by a
calibrated model of it (engine.py); its parameters are in params.py."""
