"""Mixed-policy methods (LUFFY, SRFT, ReLIFT, HPT, Prefix-RFT) as TRL GRPOTrainer subclasses,
with the paper's FLOPs accounting; see docs/mixed-policy.md."""
