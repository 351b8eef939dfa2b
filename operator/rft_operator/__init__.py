"""The rft-operator: reconciles Dataset, Model, Deployment and ReinforcementStep resources.

Run it as a module: `kopf run -m rft_operator.main --all-namespaces` (or `python -m rft_operator`).
It never imports torch: the trainer and the inference server run in the pods it creates.
"""
