"""What WeChat and WeCom share: the API client, errcodes, access tokens and the store they are kept in."""
