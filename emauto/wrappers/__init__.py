"""Microscope wrappers: each implements the contract over another Microscope, and they stack.

All sit on `emauto.wrappers.base.MicroscopeWrapper` (explicit forwarding, ``unwrapped``):
`safety` (limits, dose budget, watchdog), `recording` (sessions), `counting` (acquisitions
and dose), `checkpointed` (the agent daemon's pause and abort); `audit` is the safety log.
"""
