"""The SidecarPolicy API: its models, the CRD generated from them, the names everything
shares, and the Pod Security Standards the CRD and the core both apply. Imports nothing else
of the operator's."""
