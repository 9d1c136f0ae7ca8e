-- The uid of the ProvisioningTarget object that wrote each row. A target deleted
-- and created again under the same name is a new target: rows of another uid (or
-- of none, written before this column) are not its ledger, and its cycles forget
-- them.
ALTER TABLE deliveries ADD COLUMN target_uid text;
