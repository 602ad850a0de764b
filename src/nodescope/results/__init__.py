"""What a results folder holds beyond the probe values: stored weights, trained networks
loaded back, probes added after training, and where every number came from."""
