"""LaGoVAD: language-guided open-world video anomaly detection.

Front door::

    import lagovad
    model = lagovad.create_model("lagovad-tiny")
    defn = lagovad.AnomalyDefinition.from_strings(["Fighting", "Shooting"])
    out = model(video, mask, defn)
"""

from lagovad.checkpoint import CheckpointError, load_training_state, save_checkpoint
from lagovad.definition import NORMAL, NORMAL_PROMPT, AnomalyClass, AnomalyDefinition
from lagovad.errors import LagovadError, LagovadWarning
from lagovad.factory import create_model, get_model_config, list_models, load_checkpoint
from lagovad.model import LaGoVAD, LaGoVADOutput

__all__ = [
    "NORMAL",
    "NORMAL_PROMPT",
    "AnomalyClass",
    "AnomalyDefinition",
    "CheckpointError",
    "LaGoVAD",
    "LaGoVADOutput",
    "LagovadError",
    "LagovadWarning",
    "create_model",
    "get_model_config",
    "list_models",
    "load_checkpoint",
    "load_training_state",
    "save_checkpoint",
]
