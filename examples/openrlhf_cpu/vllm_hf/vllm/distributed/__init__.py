"""Weight-sync transport: vLLM's stateless group and communicator, over gloo on the CPU."""
