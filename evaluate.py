"""EHR-Bench evaluation of a model through a generation backend (``python evaluate.py --help``)."""

import sys

import hydra
from omegaconf import DictConfig

from ehrr1.config import register_configs, validate
from ehrr1.errors import check_output_folder, report_user_errors
from ehrr1.utils import keep_files_private

register_configs("evaluate_schema")


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
@report_user_errors
def main(cfg: DictConfig) -> None:
    validate(cfg)  # every setting in its range before any work
    keep_files_private(cfg.private_files)
    from ehrr1.evaluation.evaluate import evaluate  # here, not at the top: --help and --cfg job stay fast

    evaluate(cfg)


if __name__ == "__main__":
    check_output_folder(sys.argv[1:], "outputs/evaluate")
    main()
