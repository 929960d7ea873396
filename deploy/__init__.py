"""Deployment: tally-agent, systemd units, installers and the demo (a regular package, so that no
module named ``deploy``, such as bench/deploy.py, can stand in for it on sys.path)."""
