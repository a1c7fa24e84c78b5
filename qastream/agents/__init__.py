"""One module per stage of the topic graph; each agent is a thin loop over pure decisions."""
