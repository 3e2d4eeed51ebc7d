"""What a hook registered, remembered so its deregistration does not depend on the API server."""

from hooks.state.store import StateStore, default_state_dir

__all__ = ["StateStore", "default_state_dir"]
