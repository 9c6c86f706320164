"""The agent daemon: plans, the state machine, the control socket."""
