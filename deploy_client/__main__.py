"""`python -m deploy_client`: the same as `deployctl`."""

from deploy_client.cli import main

main()
