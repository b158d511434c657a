"""Hydra configs (config.yaml, model/, task/, suite/): data, installed as glm_eval.configs."""
