"""Reading raw inbound mail: what kind a message is, who sent it and what its report says. Pure, no I/O."""
