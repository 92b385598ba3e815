def random_uuid():
    raise RuntimeError("vllm test double: generation is not exercised on CPU")
