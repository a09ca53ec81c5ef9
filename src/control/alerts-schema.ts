// Config fragment for alerts (alerts), part of the one schema.
import { Obj } from '../config/schema-util.ts';

export const AlertsSchema = Obj({}, { default: {}, description: 'Where alerts go besides the log: a webhook (docs/alerts.md).' });
