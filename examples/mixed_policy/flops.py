"""Training compute by the paper's accounting (arXiv 2604.23747, App. B): with N the model's
parameter count and D the response tokens of a sequence (prompt tokens are not counted),

    SFT sample            6 N D   (forward + backward)
    on-policy rollout     8 N D   (generation 2ND + forward/backward 6ND)
    off-policy trace      6 N D   (expert tokens: trained on, never generated)
    extra pass            6 N D   (a further forward + backward over tokens already counted above:
                                   BRIDGE's upper level, which passes over its round's tokens again)

An "extra_pass" count appears in `tokens` only once a method adds one, so the other methods' records
are as they were.
"""
SFT, ON_POLICY, OFF_POLICY, EXTRA_PASS = 6, 8, 6, 6
FACTORS = {"sft": SFT, "on_policy": ON_POLICY, "off_policy": OFF_POLICY, "extra_pass": EXTRA_PASS}


class FlopsCounter:
    def __init__(self, parameters):
        self.parameters = int(parameters)
        self.tokens = {"sft": 0, "on_policy": 0, "off_policy": 0}

    def add(self, kind, tokens):
        if kind not in FACTORS:
            raise ValueError(f"unknown token kind {kind!r}; one of {sorted(FACTORS)}")
        self.tokens[kind] = self.tokens.get(kind, 0) + int(tokens)

    @property
    def total(self):
        return self.parameters * sum(FACTORS[kind] * count for kind, count in self.tokens.items())

    def as_dict(self):
        return {"parameters": self.parameters, "tokens": dict(self.tokens), "flops": self.total}


def parameter_count(model):
    return sum(p.numel() for p in model.parameters())
