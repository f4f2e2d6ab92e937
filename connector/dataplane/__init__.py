"""The provider's data plane: the policy enforcement point between consumers and the data."""
