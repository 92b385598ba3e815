"""Ways to reach processes that an `import sftrl_patches` in the driver cannot: Ray workers."""
