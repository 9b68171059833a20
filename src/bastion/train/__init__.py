"""The train stage: an event-driven PyTorch trainer with privacy, adversarial and
checkpoint hooks."""
