"""The tiny SFT-then-RL pipeline that runs on a CPU: generated data, a rule-based reward, and
(to come) a tiny model and the TRL runs. Same data schema and reward as the paper-scale recipes."""
