"""Who may do what through the HTTP API: the closed set of scopes
(:mod:`.scopes`), API tokens for machines (:mod:`.tokens`), and the one
authorization decision every API request goes through (:mod:`.policy`).

Sign-in for people and roles per route come later on top of
:class:`ketter.access.policy.Grant`: a grant is what any way of signing in
ends in, and :meth:`~ketter.access.policy.Grant.permits` stays the one
place that says yes or no.
"""
