// the viewer page: built in the next commits
