"""Value types and constants shared by every layer: they import nothing else of Portico.

``net`` (client networks), ``http`` (the methods Portico relays, the authentication realm),
``paths`` (path templates, which the config validates and the gateway matches), ``extensions``
(the catalogue through which policies, authentication methods and built-in endpoints are found by
name) and ``errors`` (the root of the exception hierarchy).
"""
