"""Everything about WeCom (企业微信) app messages: pacing per member, the textcard, the channel."""
