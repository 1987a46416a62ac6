"""The cluster, reached: the one API client, the Deployment list/watch, Events."""
