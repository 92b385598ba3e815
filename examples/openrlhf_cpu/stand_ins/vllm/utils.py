def random_uuid():
    raise RuntimeError("vllm CPU stand-in: generation is not exercised on CPU")
