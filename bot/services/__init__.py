"""What readers, channel admins and operators ask for: search, subscriptions, the panel, rights."""
