"""Names: the role a daemon plays in the chat, and each daemon's place in the configuration."""

FOLLOWING, GATHERING, FETCHING, ACTIVE = "following", "gathering", "fetching", "active"
VOTER, CATCHING_UP, OTHER_CLUSTER = "voter", "catching up", "other cluster"
