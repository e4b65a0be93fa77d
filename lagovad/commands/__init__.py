"""`lagovad` command-line sub-commands; each module registers its commands on the app."""
