"""Curriculum training: SFT stages 1-2 (and GRPO stage 3) with Lightning (``python train.py --help``)."""

import sys

import hydra
from omegaconf import DictConfig

from ehrr1.config import register_configs, validate
from ehrr1.errors import check_output_folder, report_user_errors
from ehrr1.utils import keep_files_private

register_configs("train_schema")


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@report_user_errors
def main(cfg: DictConfig) -> None:
    validate(cfg)  # every setting in its range before any work
    keep_files_private(cfg.private_files)
    from ehrr1.training.run_folder import open_run  # here, not at the top: --help and --cfg job stay fast

    run = open_run(cfg)  # a refused run folder is said before torch and Lightning are imported
    from ehrr1.training.curriculum import train

    train(cfg, run)


if __name__ == "__main__":
    check_output_folder(sys.argv[1:], "outputs/train")
    main()
