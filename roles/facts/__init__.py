"""pyinfra facts: each parses one command's output and changes nothing on the host."""
