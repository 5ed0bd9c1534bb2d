"""alpkd: ALP-KD (attention-based layer projection for knowledge distillation, AAAI 2021) and its baselines.

One concept per module: `losses` (the objectives), `students`, `distill` (training on transformers.Trainer),
`cache` (teacher outputs), `config` (params.yaml), `tasks`, `data`, `metrics`, `significance`, `report`, `plots`.
"""

__version__ = "0.1.0"
