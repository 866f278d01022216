"""Data pipelines: synthetic cohort and MIMIC-IV -> timelines (``python synthesize.py --help``)."""

import hydra
from omegaconf import DictConfig

from ehrr1.config import register_configs
from ehrr1.errors import report_user_errors
from ehrr1.pipelines import synthesize

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="synthesize")
@report_user_errors
def main(cfg: DictConfig) -> None:
    synthesize(cfg)


if __name__ == "__main__":
    main()
