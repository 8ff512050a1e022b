"""Apps for bench/deploy.py: each answers ``<version> <pid>``.

``VERSION`` comes from the module ``deploy_version`` (a file that
bench/deploy.py writes into a temporary directory and puts on the server's
``--pythonpath``), imported once when a worker loads the app: a worker that
answers the new version has imported the new code.
"""
