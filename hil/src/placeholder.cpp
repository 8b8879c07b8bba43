// Placeholder so the target has a source until the folder's first unit lands; delete it then.
