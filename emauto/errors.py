"""The one error hierarchy of emauto.

Every error says what was expected and what arrived. Re-exported by `emauto.microscope`.
"""

from __future__ import annotations


class EmautoError(Exception):
    """Base class of every error emauto raises on purpose."""


class ConfigError(EmautoError, ValueError):
    """A configuration file, URI or model field is invalid."""


class ModelFileError(EmautoError, ValueError):
    """A saved model, dataset or policy file is missing, corrupt or of the wrong kind."""


class InvalidSetpointError(EmautoError, ValueError):
    """A setpoint was rejected; the microscope state is unchanged."""


class UnknownKnobError(InvalidSetpointError):
    """A setpoint names a knob the backend does not have."""


class NonFiniteSetpointError(InvalidSetpointError):
    """A setpoint is NaN, infinite or not a real number."""


class OutOfLimitsError(InvalidSetpointError):
    """A setpoint lies outside the knob's limits (emauto never clips)."""


class InvalidRequestError(EmautoError, ValueError):
    """An acquisition request is malformed or outside the scan/detector limits."""


class BeamBlankedError(EmautoError, RuntimeError):
    """An acquisition was requested while the beam is blanked (e.g. after `safe()`)."""


class BackendError(EmautoError, RuntimeError):
    """The backend failed to carry out a valid command."""


class ClosedError(BackendError):
    """The microscope connection was closed."""
