"""Cloud VPC routes (the selection guide's cloud scenario): ``plainnet cloud-routes``
keeps the VPC route tables equal to "each node's pod subnet -> its instance", so the
cloud's router carries pod traffic and nodes run the ``cloud`` backend (no peer routes).

- :mod:`.plan`: pure — desired routes from Nodes, ownership, limits, the changes;
- :mod:`.provider`: the interface a cloud implements, and its error;
- :mod:`.aws`: EC2 through boto3;
- :mod:`.controller`: the leader-elected controller (Node list+watch, passes, Events,
  the ``NetworkUnavailable`` condition, metrics).
"""
