"""The officer's web UI and the local JSON API it shares with the `mvb` command line.

docs/webui.md is the contract: routes, who may call them, and what each screen shows.
"""
