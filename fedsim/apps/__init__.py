"""fedsim's Flower apps: the ClientApp (one simulated UE) and the ServerApp (the round loop)."""
