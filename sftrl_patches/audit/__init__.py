"""`sftrl-doctor audit`: verdicts for runs made elsewhere, from their versions, configs and launch command.

Nothing here is imported by `import sftrl_patches`; the run-time report imports the readers it shares.
"""
