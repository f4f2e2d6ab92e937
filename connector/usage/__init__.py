"""Usage control at run time: the facts each enforcement point feeds the policy engine
(attested, stated, held), payments, modifications of the data, and distribution of copies.

The ODRL engine (``connector.odrl``) decides; this package gathers what it decides on, at the
catalog, in negotiation, at the data plane and at every local use of a consumer's copy.
"""
