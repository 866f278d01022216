"""EHR-Bench evaluation of a model through a generation backend (``python evaluate.py --help``)."""

import hydra
from omegaconf import DictConfig

from ehrr1.config import register_configs
from ehrr1.errors import report_user_errors
from ehrr1.evaluation.evaluate import evaluate

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
@report_user_errors
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
