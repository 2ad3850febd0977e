"""FedRankLite: federated LoRA fine-tuning with a per-client rank every round."""

__version__ = "0.1.0"
