"""Training compute by the paper's accounting (arXiv 2604.23747, App. B): with N the model's
parameter count and D the response tokens of a sequence (prompt tokens are not counted),

    SFT sample            6 N D   (forward + backward)
    on-policy rollout     8 N D   (generation 2ND + forward/backward 6ND)
    off-policy trace      6 N D   (expert tokens: trained on, never generated)
"""
SFT, ON_POLICY, OFF_POLICY = 6, 8, 6


class FlopsCounter:
    def __init__(self, parameters):
        self.parameters = int(parameters)
        self.tokens = {"sft": 0, "on_policy": 0, "off_policy": 0}

    def add(self, kind, tokens):
        if kind not in self.tokens:
            raise ValueError(f"unknown token kind {kind!r}; one of {sorted(self.tokens)}")
        self.tokens[kind] += int(tokens)

    @property
    def total(self):
        n = self.parameters
        return n * (SFT * self.tokens["sft"] + ON_POLICY * self.tokens["on_policy"]
                    + OFF_POLICY * self.tokens["off_policy"])

    def as_dict(self):
        return {"parameters": self.parameters, "tokens": dict(self.tokens), "flops": self.total}


def parameter_count(model):
    return sum(p.numel() for p in model.parameters())
