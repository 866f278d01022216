"""ehrr1: reproduce and extend EHR-R1 on MIMIC-IV. ``from ehrr1 import Predictor`` asks a model about a patient."""

__all__ = ["Prediction", "Predictor"]


def __getattr__(name: str):
    if name in __all__:  # imported on first use: the package itself stays light
        from ehrr1 import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'ehrr1' has no attribute '{name}'")
