"""Data-space identity: the authority, participant certificates, DATs and transfer tokens."""
